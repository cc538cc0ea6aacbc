"""The operator console (web page + JSON API) served by the agent."""
