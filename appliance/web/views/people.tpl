% rebase('base.tpl', title='People')
<h1>People</h1>
<form method="get" action="/people" class="row">
  <input name="q" value="{{q}}" placeholder="search by name" aria-label="search">
  <button>Search</button>
</form>
<ul class="people" id="people">
% for person in people:
  <li class="person{{'' if person.enabled else ' disabled'}}">
    <img src="/people/{{person.id}}/face.png" alt="" loading="lazy" width="56" height="56">
    <div>
      <strong class="name">{{person.name}}</strong>
      <small>{{person.templates}} photo{{"" if person.templates == 1 else "s"}}{{" · card %d:%d" % person.card if person.card else ""}}
      {{" · valid from " + person.valid_from if person.valid_from else ""}}{{" · until " + person.valid_until if person.valid_until else ""}}
      {{"" if person.enabled else " · DISABLED"}}</small>
    </div>
    <form method="post" action="/people/{{person.id}}/{{'disable' if person.enabled else 'enable'}}" class="inline">
      <input type="hidden" name="csrf" value="{{csrf}}"><button>{{'Disable' if person.enabled else 'Enable'}}</button>
    </form>
    <a class="button danger" href="/people/{{person.id}}/remove">Remove</a>
    <details class="validity"><summary>Validity dates</summary>
      <form method="post" action="/people/{{person.id}}/validity" class="row">
        <input type="hidden" name="csrf" value="{{csrf}}">
        <input type="date" name="valid_from" value="{{(person.valid_from or '')[:10]}}" aria-label="valid from">
        <input type="date" name="valid_until" value="{{(person.valid_until or '')[:10]}}" aria-label="valid until">
        <button>Save</button>
      </form>
    </details>
    <details class="validity"><summary>Card</summary>
      <form method="post" action="/people/{{person.id}}/card" class="row">
        <input type="hidden" name="csrf" value="{{csrf}}">
        <input name="card" value="{{'%d:%d' % person.card if person.card else ''}}" placeholder="FACILITY:NUMBER" inputmode="numeric" pattern="[0-9]+(:[0-9]+)?" aria-label="card">
        <button>Save</button>
      </form>
    </details>
  </li>
% end
% if not people:
  <li>nobody{{" matches " + q if q else " enrolled yet"}}</li>
% end
</ul>
<h2>Enrol from photos</h2>
<form method="post" action="/people/enrol" enctype="multipart/form-data" class="card" id="enrol-photos">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <label>Name <input name="name" required></label>
  <label>Photos of this person alone <input type="file" name="photos" accept="image/*" capture="user" multiple required></label>
  <label>Valid from (optional) <input type="date" name="valid_from"></label>
  <label>Valid until (optional) <input type="date" name="valid_until"></label>
  <label>Card for the access panel (optional) <input name="card" placeholder="FACILITY:NUMBER" inputmode="numeric" pattern="[0-9]+(:[0-9]+)?"></label>
  <label class="check"><input type="checkbox" name="force" value="1"> a different person from anyone who looks alike</label>
  <button>Enrol</button>
</form>
<h2>Enrol from the door's camera</h2>
<form method="post" action="/people/capture" class="card" id="enrol-camera">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <label>Name of the person in front of the door <input name="name" required></label>
  <label>Card for the access panel (optional) <input name="card" placeholder="FACILITY:NUMBER" inputmode="numeric" pattern="[0-9]+(:[0-9]+)?"></label>
  <label class="check"><input type="checkbox" name="force" value="1"> a different person from anyone who looks alike</label>
  <button>Start</button>
</form>
