% rebase('base.tpl', title='Enrol from the camera')
<h1>Enrol {{capture.name if capture else ""}} from the camera</h1>
<div class="live"><img id="frame" alt="the door's camera" src="/live/frame.jpg"></div>
<p id="advice" class="advice">{{capture.advice if capture else "no enrolment running"}}</p>
<p id="result"></p>
<p><a href="/people">Back to people</a></p>
<script src="/static/capture.js"></script>
