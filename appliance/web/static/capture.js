// Enrolment from the camera: the frame, and what the person should do next, until it is done.
(function () {
  var img = document.getElementById("frame");
  var advice = document.getElementById("advice");
  var result = document.getElementById("result");
  function tick() {
    fetch("/people/capture.json", {credentials: "same-origin"}).then(function (r) { return r.json(); })
      .then(function (data) {
        img.src = "/live/frame.jpg?t=" + Date.now();
        advice.textContent = data.running ? data.advice : (data.ok ? "done" : "stopped");
        if (!data.running) {
          result.textContent = data.result || "";
          result.className = data.ok ? "message" : "error";
          return;
        }
        setTimeout(tick, 400);
      }).catch(function () { setTimeout(tick, 1000); });
  }
  tick();
})();
