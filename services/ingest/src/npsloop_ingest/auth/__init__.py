"""Who may post: sources, their tokens and signing secrets, replay protection."""
