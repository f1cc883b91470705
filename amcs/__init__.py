"""amcs: Adaptive Monte Carlo Search for process supervision."""
