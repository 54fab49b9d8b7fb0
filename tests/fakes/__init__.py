"""Local HTTP servers that speak the external APIs our channels call (Slack, Telegram, a
webhook receiver): real sockets, real HTTP, recording what arrives and when."""
