"""Tests of `irlhf.losses`, one module per loss module.

Expected values are written out with math.log / math.exp on a handful of numbers, never by
calling the function under test. Hand-value comparisons run in float64 with tolerance 1e-9
(`helpers`). A package, because test_imitation and test_policy_gradient are also test module
names under tests/algorithms.
"""
