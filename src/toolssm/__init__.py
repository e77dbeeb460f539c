"""toolssm: state-space models that use tools, trained on short problems, solving far longer ones.

A reproduction of "To Infinity and Beyond: Tool-Use Unlocks Length Generalization in State Space
Models" (Malach et al., 2025). Data flows one way::

    task -> trajectory -> tokens -> model -> rollout -> verdict
"""

__version__ = "0.1.0"
