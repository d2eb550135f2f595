"""Model families, one folder a paper."""
