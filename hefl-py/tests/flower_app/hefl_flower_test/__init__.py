"""hefl's end-to-end test app for Flower."""
