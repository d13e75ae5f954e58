"""Jobs built on the services: a local deployment (``prefix-rft run``), evaluation, reports."""
