"""One router per resource; each route is one call of a :mod:`weightsmith.service` verb."""
