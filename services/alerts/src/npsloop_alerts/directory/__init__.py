"""The directory: people, accounts, the team, and their publication on npsloop.accounts.v1."""
