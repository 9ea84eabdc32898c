"""Training the learned risk models: data set, fit, artifacts, model card (offline, by command)."""
