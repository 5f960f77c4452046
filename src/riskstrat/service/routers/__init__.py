"""The API, one router per resource; ``riskstrat.service.app`` includes each of them."""
