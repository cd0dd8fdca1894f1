% rebase('base.tpl', title='First start')
<h1>First start: make the first user</h1>
<p>This door has no users yet. The setup code is in the file the door's log names
(readable only on the door), or set a password from a shell with <code>facegate web passwd USER</code>.</p>
<form method="post" action="/setup" class="card">
  <label>Setup code <input name="code" required autocomplete="off"></label>
  <label>User <input name="user" required autocomplete="username"></label>
  <label>Password (at least 10 characters) <input name="password" type="password" minlength="10" required autocomplete="new-password"></label>
  <button>Make the user</button>
</form>
