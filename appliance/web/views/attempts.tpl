% rebase('base.tpl', title='Attempts')
<h1>Attempts</h1>
% if confirm:
<form method="post" action="/attempts/{{confirm['event']}}/label" class="card warn" id="confirm-label">
  <p>{{confirm["warning"]}}.</p>
  <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="who" value="{{confirm['who']}}">
  <input type="hidden" name="despite" value="1"><button>Label it all the same</button> <a href="/attempts">Cancel</a>
</form>
% end
% if tested is not None:
<div class="card" id="tested"><h2>Test photo</h2>
% for face in tested:
  <p>{{"ACCEPTED as " + face["name"] if face["accepted"] else "refused"}}{{"; nearest %s at distance %.3f" % (face["name"], face["distance"]) if face["name"] and face["distance"] is not None else ""}}
  ({{face["reason"]}}){{"; quality: " + "; ".join(face["quality"]) if face["quality"] else ""}}</p>
% end
</div>
% end
<ul class="attempts" id="attempts">
% for event in events:
  % detail = event.detail
  <li class="attempt {{event.kind}}" id="attempt-{{event.id}}">
    % if event.snapshot is not None:
    <img src="/attempts/{{event.id}}/snapshot.jpg" alt="" loading="lazy" width="80">
    % end
    <div>
      <strong>{{event.kind.upper()}}</strong> {{event.person_name or "stranger (nearest: %s)" % (detail.get("nearest") or {}).get("name", "-")}}
      <small>{{event.time[:19].replace("T", " ")}} UTC{{" · distance %.3f" % event.distance if event.distance is not None else ""}}{{" · liveness %.2f" % detail["liveness"] if detail.get("liveness") is not None else ""}}</small>
      <small>{{detail.get("reason", "")}}</small>
      <small class="label">label: {{event.label or "-"}}</small>
    </div>
    <form method="post" action="/attempts/{{event.id}}/label" class="inline">
      <input type="hidden" name="csrf" value="{{csrf}}">
      <select name="who" aria-label="who it was">
        <option value="stranger">a stranger</option>
        % for person in people:
        <option value="{{person.id}}">this was {{person.name}}</option>
        % end
      </select>
      <button>Label</button>
    </form>
  </li>
% end
% if not events:
  <li>no attempts yet</li>
% end
</ul>
<h2>Test a photo against the gallery</h2>
<form method="post" action="/attempts/test" enctype="multipart/form-data" class="card" id="test-photo">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <input type="file" name="photo" accept="image/*" required>
  <button>Test</button>
</form>
