"""The support loop on every front-end: handoffs to a person, the bot quiet while one is open, staff actions,
session outcomes and the knowledge gaps report. `bots.support.desk.SupportDesk` is the entry point."""
