"""The command line: `asd data|train|evaluate|score|detector|sweep|promote|sync`."""
