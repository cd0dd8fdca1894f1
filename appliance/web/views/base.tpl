<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{title}} · FaceGate</title>
<link rel="stylesheet" href="/static/page.css">
</head>
<body>
<header>
  <strong class="brand">FaceGate</strong>
  % if user:
  <nav>
    <a href="/live">Live</a><a href="/people">People</a><a href="/attempts">Attempts</a><a href="/tune">Tuning</a><a href="/door">Door</a>
  </nav>
  % running = status.get("running")
  <span id="door-state" class="state {{'ok' if running and not status.get('faults') else 'bad'}}">
    % if not running:
    door not running
    % elif status.get("faults"):
    FAULT: {{", ".join(status["faults"])}}
    % else:
    {{status.get("door", "")}} · {{status.get("access", "")}}
    % end
  </span>
  % panel = status.get("panel") if running else None
  % if panel:
  <span id="panel-state" class="state panel" data-led="{{panel['led'].split()[0].split('/')[0]}}">panel: {{panel["led"]}}{{" · buzzer" if panel["buzzer"] else ""}}</span>
  % end
  <form method="post" action="/logout" class="inline"><input type="hidden" name="csrf" value="{{csrf}}"><button>Log out {{user}}</button></form>
  % end
</header>
<main>
% if message:
<p class="message" id="message">{{message}}</p>
% end
% if error:
<p class="error" id="error">{{error}}</p>
% end
{{!base}}
</main>
</body>
</html>
