"""One module per group of operations; each view calls services and holds its own input serializers."""
