"""The rollout measurement: a candidate version placed next to the production one under load."""
