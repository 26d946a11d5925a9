"""The conv kernel as the host sees it: its block design, protocol, tiles and drivers."""
