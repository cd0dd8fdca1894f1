% rebase('base.tpl', title='Remove')
<h1>Remove {{person.name}}?</h1>
<p>{{person.name}} ({{person.id}}) and their {{person.templates}} photos leave this door's gallery at once.
This cannot be undone here.</p>
<form method="post" action="/people/{{person.id}}/remove" class="card">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <input type="hidden" name="confirm" value="{{person.id}}">
  <button class="danger" id="confirm-remove">Remove {{person.name}}</button>
  <a href="/people">Keep them</a>
</form>
