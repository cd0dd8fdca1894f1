// The live view: the newest frame, the door's face boxes over it, and why a face is not decided.
(function () {
  var box = document.getElementById("live");
  var img = document.getElementById("frame");
  var svg = document.getElementById("overlay");
  var list = document.getElementById("faces");
  var state = document.getElementById("door-state");
  var panel = document.getElementById("panel-state");
  var period = 1000 / parseFloat(box.dataset.fps || "2");
  var NS = "http://www.w3.org/2000/svg";

  function text(node, value) { node.textContent = value; return node; }

  function draw(data) {
    var faces = data.faces || {};
    var status = data.status || {};
    svg.setAttribute("viewBox", "0 0 " + (faces.width || 640) + " " + (faces.height || 480));
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    while (list.firstChild) list.removeChild(list.firstChild);
    (faces.faces || []).forEach(function (face) {
      var rect = document.createElementNS(NS, "rect");
      var b = face.box;
      rect.setAttribute("x", b[0]); rect.setAttribute("y", b[1]);
      rect.setAttribute("width", b[2] - b[0]); rect.setAttribute("height", b[3] - b[1]);
      rect.setAttribute("stroke", face.name ? "#22c55e" : (face.reasons.length ? "#f59e0b" : "#ef4444"));
      svg.appendChild(rect);
      var label = face.name || "unknown";
      if (face.reasons.length) label += ": " + face.reasons.join("; ");
      if (face.liveness !== undefined) label += " (liveness " + face.liveness.toFixed(2) + ")";
      var item = text(document.createElement("li"), label);
      item.className = "face";
      list.appendChild(item);
    });
    if (!(faces.faces || []).length) list.appendChild(text(document.createElement("li"), "no face in view"));
    if (state) {
      var bad = !status.running || Object.keys(status.faults || {}).length;
      state.className = "state " + (bad ? "bad" : "ok");
      text(state, !status.running ? "door not running" :
        (bad ? "FAULT: " + Object.keys(status.faults).join(", ") : status.door + " · " + status.access));
    }
    if (panel && status.panel) {  // the access panel's answer, as it tells this reader's LED and buzzer
      panel.dataset.led = status.panel.led.split(/[ \/]/)[0];
      text(panel, "panel: " + status.panel.led + (status.panel.buzzer ? " · buzzer" : ""));
    }
  }

  function tick() {
    fetch("/live/state.json", {credentials: "same-origin"}).then(function (r) {
      if (r.status === 401) { location.href = "/login"; return null; }
      return r.json();
    }).then(function (data) {
      if (data) draw(data);
      img.src = "/live/frame.jpg?t=" + Date.now();
    }).catch(function () {}).then(function () { setTimeout(tick, period); });
  }
  tick();
})();
