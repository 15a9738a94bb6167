"""Test-time RL for discovery: the TTT-Discover trainer (entropic objective, PUCT reuse) and TTRL."""
