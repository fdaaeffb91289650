"""`python -m curvecert` runs the CLI."""

from curvecert.cli import main

if __name__ == "__main__":
    main()
