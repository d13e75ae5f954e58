"""Reward service: verified math rewards over HTTP (``POST /v1/score``).

Entry points: :func:`services.reward.main.serve` (``prefix-rft reward``), ``python -m services.reward``,
and :func:`services.reward.app.create_app` for an ASGI server of one's choice. This package imports
nothing itself: verifier processes import only the verifiers.
"""
