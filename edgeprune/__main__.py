"""python -m edgeprune: the same CLI as the `edgeprune` command."""
from edgeprune.cli.main import main

if __name__ == "__main__":
    main()
