"""The paper's theory, executable (docs/theory.md).

- `toolssm.theory.turing`: Theorem 2.2. Turing machines, their compiled tool-use traces, the tape oracle
  replay, and the table learner with Lemma B.1's sample budget.
- `toolssm.theory.gssm`: Theorem 2.1. supp_α(f(D_n)) for addition against the number of states a
  fixed-precision recurrent model can tell apart, next to measured accuracy collapse.
- `toolssm.theory.cli`: ``toolssm theory``.
"""
