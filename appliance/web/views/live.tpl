% rebase('base.tpl', title='Live')
<h1>Live</h1>
<div id="live" class="live" data-fps="{{fps}}">
  <img id="frame" alt="the door's camera" src="/live/frame.jpg">
  <svg id="overlay" preserveAspectRatio="none"></svg>
</div>
<ul id="faces" class="faces"><li>waiting for the camera…</li></ul>
<dl class="facts" id="facts">
  <dt>Decision</dt><dd id="decision">{{status.get("decision", "-")}}</dd>
  <dt>Liveness</dt><dd>{{"on" if status.get("liveness") else "OFF: a photo of an enrolled person would be let in"}}</dd>
</dl>
<script src="/static/live.js"></script>
