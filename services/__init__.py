"""The three services (rollout, reward, learner) and the ``prefix-rft`` command line."""
