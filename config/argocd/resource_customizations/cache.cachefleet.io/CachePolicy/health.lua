-- Argo CD health of a CachePolicy: Healthy once the fleet's ring carries it, Degraded when it
-- cannot get there without a change (its fleet is missing, or another policy owns its prefix).
local hs = {}
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the cachefleet controller"
  return hs
end
if obj.metadata.generation ~= nil and (obj.status.observedGeneration or 0) < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to observe generation " .. obj.metadata.generation
  return hs
end
local c = {}
for _, cond in ipairs(obj.status.conditions) do
  c[cond.type] = cond
end
if c.Stalled ~= nil and c.Stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = c.Stalled.message
  return hs
end
if c.Accepted ~= nil and c.Accepted.status == "True" then
  hs.status = "Healthy"
  hs.message = c.Accepted.message
  return hs
end
hs.status = "Progressing"
if c.Accepted ~= nil then
  hs.message = c.Accepted.message
else
  hs.message = "Waiting for the cachefleet controller"
end
return hs
