"""A task as a gymnasium environment, for reinforcement-learning code: ``ToolEnv("addition", size=10)``.

    action       one token id of the task's vocabulary (``Discrete(len(vocab))``): the token the policy generates
    observation  the forced tokens that follow it, as ids (``Sequence(Discrete(len(vocab)))``): after ``reset``,
                 [BOS] and the input (the task's context); after a step, the tool's answer if the token completed a
                 command, else nothing (the empty tuple)
    reward       0 until the episode ends; then the verifier's verdict on the output stream, 1.0 or 0.0, as
                 `toolssm.evaluate` grades it (at [EOS], or when the token budget runs out)
    terminated   the policy said [EOS];  truncated: the task's token budget (``Task.token_budget``) ran out
    info         ``role``: the role the step's token took (``thought``, ``command``, ``output``; ``input`` after
                 ``reset``); ``verdict``: None, then True/False at the end; ``expert_action``: the expert's next
                 token id while every action so far was the expert's, else -1 (once off its path, the expert of
                 a task cannot say what it would do)

``reset(seed=...)`` draws a problem of the given size with ``Task.draw`` (``size`` is an evaluation spec: "10",
or "<=10" for training's mix of sizes), from a ``random.Random`` seeded by the env's ``np_random``, so a seed gives
the same problem every time. The episode is the same `toolssm.protocol.Episode` that training and the rollout
drive, so a token means the same in all three. gymnasium is an optional extra (``pip install 'toolssm[gym]'``),
imported when this module is.
"""

from __future__ import annotations

import random
from typing import Any

import gymnasium as gym
from gymnasium import spaces

from toolssm.protocol import Role
from toolssm.tasks import Task, get_task


class ToolEnv(gym.Env):
    metadata = {"render_modes": ["ansi"]}

    def __init__(self, task: str | Task = "addition", size: int | str = 5, *, max_tokens: int | None = None,
                 render_mode: str | None = None):  # fmt: skip
        self.task = get_task(task) if isinstance(task, str) else task
        self.size_spec = str(size)
        self.task.spec_size(self.size_spec)  # a one-line ValueError for a size the task does not have
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"bad render_mode {render_mode!r} (choose from: ansi)")
        self.render_mode = render_mode
        self.max_tokens = max_tokens
        self.vocab = self.task.vocab()
        self.action_space = spaces.Discrete(len(self.vocab))
        self.observation_space = spaces.Sequence(spaces.Discrete(len(self.vocab)))
        self.problem: Any = None
        self.episode = None
        self._expert: list[int] = []
        self._on_path = True

    def _obs(self, tokens: list[str]) -> tuple[int, ...]:
        return tuple(self.vocab.ids(tokens))

    def _expert_action(self) -> int:
        k = self.episode.n_generated
        return self._expert[k] if self._on_path and k < len(self._expert) else -1

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.close()
        rng = random.Random(int(self.np_random.integers(2**63)))
        self.problem = self.task.draw(rng, self.size_spec)
        demo = self.task.demonstrate(self.problem)
        forced = (Role.INPUT, Role.OBSERVATION)
        self._expert = [self.vocab.id(t) for t, r in zip(demo.tokens, demo.roles) if r not in forced]
        self._on_path = True
        budget = self.max_tokens if self.max_tokens is not None else self.task.token_budget(self.problem)
        self.episode = self.task.episode(self.problem, record=self.render_mode == "ansi", max_tokens=budget)
        obs = self._obs(self.episode.reset())
        info = {"role": Role.INPUT.name.lower(), "verdict": None, "expert_action": self._expert_action(),
                "problem": self.task.format(self.problem)}  # fmt: skip
        return obs, info

    def step(self, action):
        if self.episode is None:
            raise RuntimeError("step() before reset()")
        action = int(action)
        if not self.action_space.contains(action):
            raise ValueError(f"bad action {action}: a token id in [0, {len(self.vocab)})")
        self._on_path = self._on_path and action == self._expert_action()
        st = self.episode.step(self.vocab.token(action))
        reward, verdict = 0.0, None
        if st.terminated or st.truncated:
            verdict = self.task.verify(self.problem, self.episode).correct
            reward = float(verdict)
        info = {"role": st.role.name.lower(), "verdict": verdict, "expert_action": self._expert_action()}
        return self._obs(st.observation), reward, st.terminated, st.truncated, info

    def render(self) -> str | None:
        if self.render_mode == "ansi" and self.episode is not None and self.episode.trajectory is not None:
            return self.episode.trajectory.render()
        return None

    def close(self) -> None:
        tool = getattr(self.episode, "tool", None)
        if tool is not None and hasattr(tool, "close"):
            tool.close()
