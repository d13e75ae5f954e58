"""Answer checking for the ``math`` and ``gsm8k`` verifiers, one job per module:

- ``boxes``: brace-aware scanning of ``\\boxed{}`` groups (linear time on any input);
- ``extract``: the candidate answers a response states, and the answer a reference holds;
- ``runaway``: cheap checks that refuse inputs sympy could only finish at the deadline;
- ``rules``: named normalisations and comparisons tried where math-verify alone says no;
- ``decide``: math-verify first, then the rules; the verdict names the rule that decided.
"""
