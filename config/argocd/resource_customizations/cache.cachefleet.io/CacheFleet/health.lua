-- Argo CD health of a CacheFleet, from the conditions its controller writes (the kstatus
-- conventions: Stalled and Reconciling, plus Ready and Degraded).
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
if c.Degraded ~= nil and c.Degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = c.Degraded.message
  return hs
end
if c.Ready ~= nil and c.Ready.status == "True" and (c.Reconciling == nil or c.Reconciling.status ~= "True") then
  hs.status = "Healthy"
  hs.message = c.Ready.message
  return hs
end
hs.status = "Progressing"
if c.Reconciling ~= nil and c.Reconciling.status == "True" then
  hs.message = c.Reconciling.message
elseif c.Ready ~= nil then
  hs.message = c.Ready.message
else
  hs.message = "Waiting for the cachefleet controller"
end
return hs
