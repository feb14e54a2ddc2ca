"""Consumer identity: consumers, API keys, tokens, the OAuth2 server and their events."""
