% rebase('base.tpl', title='Tuning')
<h1>Tuning</h1>
% if preview:
<form method="post" action="/tune/apply" class="card warn" id="confirm-threshold">
  <h2>Change the threshold?</h2>
  <div class="scroll"><table><tr><th>threshold</th><th>false accepts / comparison</th><th>false rejects</th></tr>
  % for threshold, far, frr in preview["rows"]:
  <tr><td>{{"%.3f" % threshold}}{{" (now)" if preview["current"] is not None and abs(threshold - preview["current"]) < 1e-6 else " (new)"}}</td><td>{{"%.1e" % far}}</td><td>{{"%.1f%%" % (100 * frr)}}</td></tr>
  % end
  </table></div>
  <p>From {{"%.3f" % preview["current"] if preview["current"] is not None else "-"}} to {{"%.3f" % preview["new"]}}, on this site's evidence.</p>
  <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="threshold" value="{{preview['new']}}">
  % if preview["force"]:
  <input type="hidden" name="force" value="1">
  % end
  <button>Apply {{"%.3f" % preview["new"]}}</button> <a href="/tune">Cancel</a>
</form>
% end
% if report:
<img src="/tune/plot.png" alt="distances of the same and different people, and the DET curve" class="plot">
<pre id="report">{{report}}</pre>
% end
<form method="post" action="/tune/preview" class="card" id="set-threshold">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <label>New distance threshold <input name="threshold" inputmode="decimal" required></label>
  <label class="check"><input type="checkbox" name="force" value="1"> allow a threshold looser than the false-accept target (admits more strangers)</label>
  <button>Preview</button>
</form>
