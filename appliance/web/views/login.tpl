% rebase('base.tpl', title='Log in')
<h1>Log in to this door</h1>
<form method="post" action="/login" class="card">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <label>User <input name="user" autocomplete="username" required autofocus></label>
  <label>Password <input name="password" type="password" autocomplete="current-password" required></label>
  <button>Log in</button>
</form>
