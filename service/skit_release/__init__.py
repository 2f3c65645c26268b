"""skit-release: the image release tool (changed images, versions, build, smoke, push, lock)."""
