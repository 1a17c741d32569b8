"""A two-document handbook for tests of the agent and its surfaces: one ordinary topic, one sensitive."""

LAPTOPS = """# Laptop requests

## Getting a new laptop
New laptops are ordered through the IT portal at it.northwind.example under Hardware > Laptop request.
Standard staff get a 14-inch MacBook Pro; engineers may choose a 16-inch model.
Delivery takes five working days. Ask in #it-help if the order has not arrived after that.

## Replacing a broken laptop
Bring a broken laptop to the IT desk on floor 2. A loaner is issued the same day.
"""

PAY = """# Salary bands

## How salary bands work
Every role has a salary band reviewed each March by the People team.
Salary changes take effect on the first payroll of April.
"""
