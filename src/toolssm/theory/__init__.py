"""The paper's theory, executable (docs/theory.md).

- `toolssm.theory.turing`: Theorem 2.2. The table learner trained on compiled traces of the task layer's
  Turing machines (`toolssm.tasks.turing_machines`), Lemma B.1's sample budget, errors at every length.
- `toolssm.theory.gssm`: Theorem 2.1. supp_α(f(D_n)) for addition against the number of states a
  fixed-precision recurrent model can tell apart, next to measured accuracy collapse.

``toolssm theory`` runs both (toolssm.cli_theory, beside the CLI).
"""
