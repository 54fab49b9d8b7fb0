"""The directory: people, accounts, the team, and their publication on npsloop.accounts.v1.

The team fallback (who receives anything unassigned) and the promoter "wins" destination are a
singleton database row edited through `GET/PUT /v1/team`, not settings: every replica sees a
change at once, without a restart, and a person it names cannot be deleted while it does.
"""
