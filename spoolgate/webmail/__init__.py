"""The emergency webmail: users read, search and send mail while the company's server is down."""
