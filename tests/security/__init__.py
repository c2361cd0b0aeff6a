"""One test module per finding of the security review (issue 17), each named after it."""
