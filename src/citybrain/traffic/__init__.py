"""Traffic (治堵): a SUMO digital twin of the road network, signal controllers as plug-ins that compete on one
benchmark, and the closed loop that checks every plan in a forked twin before it is applied.

Only `twin` talks to SUMO (libsumo in process, TraCI as the fallback); everything else sees the twin's
observations and sends it phase decisions."""
