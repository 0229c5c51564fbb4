"""The control plane: validates, versions and pushes the routing policy."""
