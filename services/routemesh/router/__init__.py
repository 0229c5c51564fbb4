"""The decision service (router): classifies, plans, executes and relays a chat."""
