"""The operator's web console, served by the gateway at /console: live models, routes, decisions, policy, alerts."""
