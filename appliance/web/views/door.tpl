% rebase('base.tpl', title='Door')
<h1>Door</h1>
<dl class="facts" id="status">
  <dt>Running</dt><dd>{{"yes" if status.get("running") else "no: " + status.get("why", "")}}</dd>
  <dt>Door</dt><dd>{{status.get("door", "-")}} ({{status.get("mode", "-")}})</dd>
  <dt>Relay</dt><dd>{{status.get("relay", "-")}}</dd>
  <dt>Faults</dt><dd>{{"; ".join("%s: %s" % item for item in (status.get("faults") or {}).items()) or "none"}}</dd>
  <dt>Decision</dt><dd>{{status.get("decision", "-")}}</dd>
  <dt>Decisions</dt><dd>{{", ".join("%s %s" % item for item in (status.get("decisions") or {}).items())}}</dd>
  % if status.get("panel"):
  <dt>Panel</dt><dd id="panel">the access panel shows {{status["panel"]["led"]}} on this reader's LED{{" and sounds its buzzer" if status["panel"]["buzzer"] else ""}}</dd>
  % end
  <dt>Inputs</dt><dd>{{", ".join("%s %s" % (name, "active" if on else "inactive") for name, on in (status.get("inputs") or {}).items()) or "none configured"}}</dd>
  <dt>Version</dt><dd>{{status.get("version") or "-"}}</dd>
  % if update:
  <dt>Update</dt><dd id="update">{{update.get("state", "-").upper() if update.get("state") in ("failed", "rolled_back") else update.get("state", "-")}}{{": " + update["reason"] if update.get("reason") else ""}} (previous version {{update.get("previous") or "none"}}; 'facegate update --rollback' on the door goes back)</dd>
  % end
</dl>
<div class="row">
<form method="post" action="/door/relay-test" class="inline" id="relay-test">
  <input type="hidden" name="csrf" value="{{csrf}}"><button>Test the relay (opens the door)</button>
</form>
<form method="post" action="/door/selftest" class="inline" id="selftest">
  <input type="hidden" name="csrf" value="{{csrf}}"><button>Self-test</button>
</form>
</div>
% if update:
<form method="post" action="/door/update" enctype="multipart/form-data" class="card" id="update-form">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <label>New version (a bundle, facegate-BOARD-VERSION.tar.gz) <input type="file" name="bundle" accept=".gz" required></label>
  <button>Update this door</button>
</form>
% end
% if selftest:
<pre id="selftest-result">{{selftest}}</pre>
% end
<h2>Who may enter when</h2>
% if not rules["schedules"] and not rules["groups"]:
<p>No schedules or access groups: everybody enabled and valid may enter at any time ('facegate access' sets them).</p>
% else:
<div class="scroll"><table id="rules">
<tr><th>schedule or group</th><th>periods or doors</th><th>holidays or schedule</th></tr>
% for name, first, second in rules["schedules"]:
<tr><td>schedule {{name}}</td><td>{{first}}</td><td>{{second}}</td></tr>
% end
% for name, first, second in rules["groups"]:
<tr><td>group {{name}}</td><td>{{first}}</td><td>{{second}}</td></tr>
% end
</table></div>
% end
<h2>Audit trail</h2>
<form method="get" action="/door" class="row" id="audit-filter">
  <input name="kind" value="{{filters['kind']}}" placeholder="kind (grant, deny, change…)">
  <input name="person" value="{{filters['person']}}" placeholder="person">
  <input name="since" value="{{filters['since']}}" placeholder="since 2026-12-01">
  <input name="until" value="{{filters['until']}}" placeholder="until">
  <button>Filter</button>
  <a class="button" href="/door/audit.csv?{{csv_query}}">CSV</a>
</form>
<div class="scroll"><table class="audit" id="audit">
<tr><th>time (UTC)</th><th>what</th><th>who</th><th>detail</th></tr>
% for event in events:
  % detail = event.detail
  % origin = detail.get("origin") if isinstance(detail.get("origin"), dict) else {}
<tr><td>{{event.time[:19].replace("T", " ")}}</td><td>{{event.kind}}</td><td>{{event.person_name or ""}}</td>
<td>{{detail.get("reason") or detail.get("message") or detail.get("action") or ""}}{{" · by %s:%s@%s" % (origin.get("via"), origin.get("user"), origin.get("address")) if origin.get("via") == "web" else ""}}</td></tr>
% end
</table></div>
