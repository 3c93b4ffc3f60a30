"""The pure protocol modules' tests."""
