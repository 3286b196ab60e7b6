"""Network and optimisation settings shared by every agent (``agent.*``).

Kept apart from the run config so that agents and inference methods can import it
without importing every replay method and environment.
"""

from __future__ import annotations

from dataclasses import dataclass

from replaylab.params import opt as _opt

ACTIVATIONS = ("relu", "tanh", "elu", "gelu", "silu")


@dataclass(frozen=True)
class AgentConfig:
    """Network and optimisation settings shared by SAC, DSAC, TD3 and DDPG (``agent.*``)."""

    hidden_sizes: tuple[int, ...] | None = _opt((256, 256), "hidden layer widths of every MLP; not given or null "
                                                             "on a task distribution: [300, 300, 300] (PEARL)", min=1)
    activation: str = _opt("relu", "hidden activation", choices=ACTIVATIONS)
    layer_norm: bool = _opt(False, "LayerNorm after each hidden Dense layer")
    actor_lr: float = _opt(3e-4, "actor Adam learning rate", min=0.0)
    critic_lr: float = _opt(3e-4, "critic Adam learning rate", min=0.0)
    gamma: float = _opt(0.99, "discount factor", min=0.0, max=1.0)
    reward_scale: float = _opt(1.0, "rewards are multiplied by this in every update", min=0.0)
    tau: float = _opt(0.005, "Polyak rate of the target networks", min=0.0, max=1.0)
    num_critics: int = _opt(2, "critics in the ensemble (SAC/TD3 take the min; DDPG uses 1)", min=1)
    init_temperature: float = _opt(1.0, "initial entropy temperature", min=0.0, agents=("sac", "dsac"))
    temperature_lr: float = _opt(3e-4, "temperature Adam learning rate", min=0.0, agents=("sac", "dsac"))
    target_entropy: float | None = _opt(None, "entropy target; null means -|A|", agents=("sac", "dsac"))
    policy_delay: int | None = _opt(None, "critic updates per actor update; null: TD3 2, others 1", min=1)
    exploration_noise: float = _opt(0.1, "Gaussian action noise while acting", min=0.0, agents=("td3", "ddpg"))
    target_noise: float = _opt(0.2, "target policy smoothing noise", min=0.0, agents=("td3",))
    target_noise_clip: float = _opt(0.5, "clip of the target smoothing noise", min=0.0, agents=("td3",))
    num_quantiles: int = _opt(16, "quantile fractions per return distribution", min=1, agents=("dsac",))
    fractions: str = _opt("iqn", "fractions: iqn (random, DSAC's presum) or fix (uniform)", choices=("iqn", "fix"),
                          agents=("dsac",))
    risk: str = _opt("neutral", "what the policy maximises: the mean, or a risk measure of the return",
                     choices=("neutral", "cvar", "wang", "std"), agents=("dsac",))
    risk_param: float = _opt(0.0, "cvar: the tail fraction in (0, 1]; wang: the shift (< 0 risk-averse); "
                                  "std: the weight of the std", agents=("dsac",))
    quantile_embedding: int = _opt(64, "cosine features of a fraction (IQN)", min=1, agents=("dsac",))
