"""CityBrain: an open-source City Brain (城市大脑) for a city's or district's operations centre."""

__version__ = "0.1.0"
