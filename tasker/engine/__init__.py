"""What runs a task: the engine pass, step attempts and what handlers see."""
