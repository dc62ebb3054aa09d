"""What decides what is shown: the policy protocol, the registry and the built-in policies."""

from policies.base import BasePolicy, Policy, top_k
from policies.builtin import EmbeddingPolicy, PopularPolicy, RandomPolicy
from policies.registry import available, make_policy, register, resolve

__all__ = [
    "Policy",
    "BasePolicy",
    "top_k",
    "RandomPolicy",
    "PopularPolicy",
    "EmbeddingPolicy",
    "register",
    "resolve",
    "available",
    "make_policy",
]
