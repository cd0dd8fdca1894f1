% rebase('base.tpl', title='Error')
<p><a href="/">Back to the door's page</a></p>
