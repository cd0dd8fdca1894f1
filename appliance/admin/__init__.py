"""The administrator's side: the site gallery (source of truth) and the MQTT admin client."""
